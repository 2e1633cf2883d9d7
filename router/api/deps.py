"""Dependencies shared by the route modules, as ``Annotated`` aliases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Request

from router.access import KeyRing
from router.dispatch import Dispatcher
from router.jobs import BatchJobs
from router.lifecycle import Lifecycle
from router.live import LiveView
from router.metrics import Metrics
from router.training import Training
from turnout.routes import RouteTable
from turnout.settings import Settings


@dataclass
class Services:
    settings: Settings
    table: RouteTable
    client: aioredis.Redis
    live: LiveView
    dispatcher: Dispatcher
    jobs: BatchJobs
    metrics: Metrics
    lifecycle: Lifecycle
    training: Training
    keyring: KeyRing

    def use_table(self, table: RouteTable) -> None:
        """Put a reloaded route table in force in every part that routes."""
        self.table = table
        self.dispatcher.table = table
        self.jobs.table = table
        self.lifecycle.table = table
        self.training.table = table


async def get_services(request: Request) -> Services:
    # async: a plain def dependency would run in a worker thread per request.
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
