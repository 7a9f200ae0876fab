"""`make demo DEMO_ARGS="--port-base N"`: receiver, stand-in and application on N, N+1, N+2."""

from __future__ import annotations

import pytest

from devtools.demo import DemoPorts, demo_ports, parse_args


def test_port_base_puts_the_three_servers_on_consecutive_ports() -> None:
    args = parse_args(["--port-base", "9300"])
    assert demo_ports(args.port_base) == DemoPorts(web=9300, standin=9301, application=9302)


def test_without_a_port_base_the_demo_takes_free_ports() -> None:
    ports = demo_ports(parse_args([]).port_base)
    assert ports.web > 0
    assert (ports.standin, ports.application) == (0, 0)  # the OS picks a free one


@pytest.mark.parametrize("base", ["x", "0", "80", "65534", "-1"])
def test_a_port_base_that_leaves_no_room_is_refused(
    base: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["--port-base", base])
    assert exited.value.code == 2
    assert "--port-base" in capsys.readouterr().err
