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
