"""Model id → the deployments that can serve it, in the order to try them.

Highest priority first; among equal priorities a weighted random order, so traffic splits by
weight; deployments whose breaker is open are skipped. `provider/model` addresses one deployment
explicitly (billed at the price of the public model that lists it).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hubproxy import errors
from hubproxy.config import Config, Model, Provider
from hubproxy.routing.health import HealthBoard


@dataclass(frozen=True, slots=True)
class Route:
    model: Model
    provider: Provider
    upstream_model: str
    priority: int = 0
    weight: int = 1
    key: str = field(init=False)  # "provider/upstream_model": made once, read on every call

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.provider.name}/{self.upstream_model}")


class Router:
    def __init__(self, config: Config, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._routes: dict[str, list[Route]] = {}
        self._explicit: dict[str, list[Route]] = {}
        for name, model in config.models.items():
            routes = [
                Route(model, config.providers[d.provider], d.upstream_model, d.priority, d.weight)
                for d in model.targets
            ]
            self._routes[name] = routes
            for route in routes:
                self._explicit.setdefault(route.key, [route])

    def resolve(self, model: str) -> list[Route]:
        """Every deployment of a model id (or of an explicit `provider/upstream-model`)."""
        routes = self._routes.get(model) or self._explicit.get(model)
        if not routes:
            raise errors.model_not_found(model)
        return routes

    def candidates(self, routes: list[Route], health: HealthBoard) -> list[Route]:
        """The order to try them in; 503 naming the model if every one is cooling down."""
        if len(routes) == 1 and health.available(routes[0].key):
            return routes
        usable = [r for r in routes if health.available(r.key)]
        if not usable:
            raise errors.upstream_unavailable(
                f"No deployment of {routes[0].model.name!r} is available right now (all are cooling down "
                "after failures); try again shortly.",
                status=503,
            )
        ordered: list[Route] = []
        for priority in sorted({r.priority for r in usable}, reverse=True):
            group = [r for r in usable if r.priority == priority]
            while group:
                pick = self._rng.choices(group, weights=[r.weight for r in group])[0]
                ordered.append(pick)
                group.remove(pick)
        return ordered

    def routes(self) -> list[Route]:
        """The first deployment of each model (for listing)."""
        return [routes[0] for routes in self._routes.values()]
