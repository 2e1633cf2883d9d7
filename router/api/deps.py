"""Dependencies shared by the route modules, as ``Annotated`` aliases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Request

from turnout.core.routes import RouteTable
from turnout.core.settings import Settings
from turnout.router.access import KeyRing
from turnout.router.dispatch import Dispatcher
from turnout.router.jobs import BatchJobs
from turnout.router.lifecycle import Lifecycle
from turnout.router.live import LiveView
from turnout.router.metrics import Metrics
from turnout.router.training import Training


@dataclass
class Services:
    settings: Settings
    client: aioredis.Redis
    live: LiveView
    dispatcher: Dispatcher
    jobs: BatchJobs
    metrics: Metrics
    lifecycle: Lifecycle
    training: Training
    keyring: KeyRing

    @property
    def table(self) -> RouteTable:
        """The route table in force (held by the live view, which adopts reloads)."""
        return self.live.table


async def get_services(request: Request) -> Services:
    # async: a plain def dependency would run in a worker thread per request.
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
