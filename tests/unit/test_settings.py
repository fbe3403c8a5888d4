"""Settings derived from other settings."""

from __future__ import annotations

import socket

from scheduler.settings import Settings


def test_static_membership_is_on_by_default_with_host_and_port() -> None:
    assert Settings(web_port=6077).group_instance_id == f"{socket.gethostname()}-6077"


def test_an_explicit_instance_id_wins_and_an_empty_one_turns_static_membership_off() -> None:
    assert Settings(instance_id="worker-a").group_instance_id == "worker-a"
    assert Settings(instance_id="").group_instance_id is None


def test_two_workers_on_one_host_get_different_instance_ids() -> None:
    assert Settings(web_port=6066).group_instance_id != Settings(web_port=6067).group_instance_id
