"""Where hubproxy keeps its files: one home (--home, HUBPROXY_HOME) or the platform's per-user directories."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from hubproxy.filemodes import fix_modes

HOME_ENV = "HUBPROXY_HOME"
DATABASE_ENV = "HUBPROXY_DATABASE_URL"
REDIS_ENV = "HUBPROXY_REDIS_URL"


@dataclass(frozen=True)
class Paths:
    """Where config, database and the fallback credentials file live."""

    config_dir: Path
    data_dir: Path
    database_url: str | None = None  # --database or HUBPROXY_DATABASE_URL

    @classmethod
    def resolve(cls, home: str | os.PathLike[str] | None = None, database: str | None = None) -> Paths:
        """--home wins, then HUBPROXY_HOME, then platformdirs' per-user directories."""
        chosen = home or os.environ.get(HOME_ENV)
        url = database or os.environ.get(DATABASE_ENV) or None
        if chosen:
            root = Path(chosen).expanduser().resolve()
            return cls(root, root, url)
        data = Path(platformdirs.user_data_dir("hubproxy"))
        return cls(Path(platformdirs.user_config_dir("hubproxy")), data, url)

    @property
    def store(self) -> Path | str:
        """What holds users, keys and money: --database / HUBPROXY_DATABASE_URL, else config.toml's
        `[store] url` (with the password `db set-password` keeps in the keyring), else the SQLite
        file in the home."""
        url = self.database_url
        if not url and self.config.exists():
            from hubproxy.config.settings import Config

            url = Config.load(self.config).store.url
        if not url:
            return self.database
        from hubproxy.secrets import with_stored_password

        return with_stored_password(self, url)

    @property
    def config(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def database(self) -> Path:
        return self.data_dir / "hubproxy.db"

    @property
    def credentials(self) -> Path:
        return self.config_dir / "credentials.json"

    @property
    def journal(self) -> Path:
        return self.data_dir / "journal"

    @property
    def metrics(self) -> Path:
        """Where each worker of `serve --workers` leaves its call counts for the others' /metrics."""
        return self.data_dir / "metrics"

    @property
    def feed(self) -> Path:
        """Where the workers of `serve --workers` pass the dashboard's live feed to each other."""
        return self.data_dir / "feed"

    @property
    def admin_sessions(self) -> Path:
        """The dashboard's admin sessions: their generation (logging out moves it on, ending them all)
        and the one-time links already used, shared by every worker."""
        return self.data_dir / "dashboard-admin"

    @property
    def admin_token(self) -> Path:
        return self.data_dir / "admin-token"

    def make_private(self) -> list[Path]:
        """Tighten the home's directories and files that others can read; returns those changed."""
        db = str(self.database)
        files = [self.config, self.credentials, self.admin_token, self.database, Path(db + "-wal"), Path(db + "-shm")]
        return fix_modes(sorted({self.config_dir, self.data_dir}), files)
