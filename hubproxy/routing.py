"""Model id → the provider and upstream model that serve it."""

from __future__ import annotations

from dataclasses import dataclass

from hubproxy import errors
from hubproxy.config import Config, Model, Provider


@dataclass(frozen=True, slots=True)
class Route:
    model: Model
    provider: Provider


class Router:
    def __init__(self, config: Config) -> None:
        self._routes = {name: Route(model, config.providers[model.provider]) for name, model in config.models.items()}

    def resolve(self, model: str) -> Route:
        route = self._routes.get(model)
        if route is None:
            raise errors.model_not_found(model)
        return route

    def routes(self) -> list[Route]:
        return list(self._routes.values())
