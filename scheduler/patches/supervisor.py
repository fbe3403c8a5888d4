"""The agents' supervisor looks once a minute, and remembers a wake-up.

Upstream: mode's ``OneForOneSupervisor`` looks every 5 s for an actor to
restart, and drops a ``wakeup()`` that comes while it is not waiting (before
its first wait, or while it restarts another service), counting on the next
timed look.

Ours: the timed look comes every ``SUPERVISOR_LOOK_S``, and a wake-up is
remembered until the supervisor looks. An actor that crashes wakes its
supervisor itself (Faust's ``Agent._execute_actor`` calls ``wakeup()``), so
it is restarted at once; the timed look is only the fallback.

Why: with five agents, mode's 5 s woke an idle worker's loop once a second.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mode import OneForOneSupervisor, Service

REPLACES = ("mode.supervisors:SupervisorStrategy._supervisor",)
USES = (
    "mode.supervisors:SupervisorStrategy._please_wakeup",
    "mode.supervisors:SupervisorStrategy._services",
    "mode.supervisors:SupervisorStrategy.start_services",
    "mode.supervisors:SupervisorStrategy.restart_services",
    "mode.supervisors:SupervisorStrategy.service_operational",
    "faust.agents.agent:Agent._execute_actor",
)

#: How often an agent's supervisor looks for an actor to restart unasked.
SUPERVISOR_LOOK_S = 60.0


class PatientSupervisor(OneForOneSupervisor):
    """The app's ``agent_supervisor``: mode's one-for-one, looking once a minute."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._asked = False

    def wakeup(self) -> None:
        self._asked = True
        super().wakeup()

    @Service.task
    async def _supervisor(self) -> None:
        while not self.should_stop:
            if not self._asked:
                self._please_wakeup = self.loop.create_future()
                try:
                    await asyncio.wait_for(self._please_wakeup, timeout=SUPERVISOR_LOOK_S)
                except TimeoutError:
                    pass
                finally:
                    self._please_wakeup = None
            self._asked = False
            if self.should_stop:
                break
            services = list(self._services)
            await self.start_services([s for s in services if not s.started])
            await self.restart_services(
                [s for s in services if s.started and not self.service_operational(s)]
            )


def install() -> None:
    """Nothing to install: the app names the class in its settings (``scheduler.app``)."""
