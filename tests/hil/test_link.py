"""HIL: the link manager on a virtual hub: WiFi preferred, failover to 4G and
failback, modem faults with clear states and recovery, the provisioning WiFi
check, and TCP through the proxy of the active link.

The world plays the access point, the modem (AT over UART2, PWRKEY on GPIO 27)
and one proxy per link (host/hubctl/vhub/net.py). The hub reports link changes
on its console ("hemhub link: A -> B") and its state through service.link_json.
"""

from __future__ import annotations

import socketserver
import threading
import time

import pytest
from hubctl.transport import HubConsole
from vhubtest import write_config

SSID, PSK, APN = "home", "correct horse", "iot.test"
# Short timings so faults resolve in a second or two (production defaults: link/manager.py).
LINK = {"check_ms": 100, "wifi_connect_ms": 1500, "backoff_ms": 200, "backoff_max_ms": 800,
        "modem_cmd_ms": 300, "modem_boot_ms": 800, "modem_reg_ms": 1000, "modem_pwrkey_ms": 120,
        "modem_guard_ms": 300, "ppp_ms": 1000}


@pytest.fixture
def net(vhub, sim_only):
    with vhub.world() as w:
        w.net_ap(SSID, psk=PSK, rssi=-52)
        w.net_modem(boot_ms=100, pwrkey_ms=100, reg_ms=100)
    return vhub


def configure(rh, wifi=True, apn=True, **extra):
    cfg = {"link": LINK, **extra}
    if wifi:
        cfg["wifi"] = {"ssid": SSID, "psk": PSK}
    if apn:
        cfg["apn"] = APN
    mark = len(rh.console_log())
    write_config(rh, cfg)  # the session ends with a soft reset: the app starts with this config
    return mark


def wait_link(rh, link: str, mark: int, timeout: float = 20.0) -> int:
    """Wait for the hub's console to report a change to `link`; returns the new mark."""
    return wait_console(rh, f"-> {link} ", mark, timeout)


def wait_console(rh, text: str, mark: int, timeout: float = 20.0) -> int:
    """Wait for `text` on the hub's console after `mark`; returns the position after it."""
    needle = text.encode()
    deadline = time.monotonic() + timeout
    while True:
        log = rh.console_log()
        i = log.find(needle, mark)
        if i >= 0:
            return i + len(needle)
        if time.monotonic() > deadline:
            with rh.world() as w:
                st = w.net()
            raise AssertionError(f"no {text!r}: console {log[mark:][-1500:]!r}\nworld {st}")
        time.sleep(0.05)


def link_state(rh) -> dict:
    """service.link_json from the running application (interrupted, then restarted)."""
    with HubConsole(rh.port, soft_reset=False) as con:
        return con.call("service", "link_json")


def route(rh) -> str | None:
    with rh.world() as w:
        return w.net()["route"]


def test_wifi_preferred(net):
    mark = configure(net)
    wait_link(net, "wifi", mark)
    assert route(net) == "wifi"
    st = link_state(net)
    assert st["link"] == "wifi" and st["quality"] == {"rssi": -52}
    with net.world() as w:
        assert w.net()["modem"]["online"] is False  # 4G stays out of the way


def test_failover_to_cellular_and_failback(net):
    mark = wait_link(net, "wifi", configure(net))
    with net.world() as w:
        w.net_ap(SSID, up=False)  # the access point goes away
    mark = wait_link(net, "cellular", mark)
    with net.world() as w:
        st = w.net()
        assert st["route"] == "cellular" and st["modem"]["online"] and st["ppp"]["up"]
        w.net_ap(SSID, up=True)
    # Failback hangs up the data call, then unloads the driver, after the route change.
    mark = wait_console(net, "modem standby, driver unloaded", wait_link(net, "wifi", mark))
    with net.world() as w:
        st = w.net()
    assert st["route"] == "wifi" and not st["modem"]["online"], st
    # Failback drops the modem driver (~8 KiB of heap) and leaves the modem
    # powered and registered: a second failover loads the driver again and
    # dials without switching the modem on anew.
    with net.world() as w:
        assert w.net()["modem"]["powered"]
        power_ons = w.net()["modem"]["counters"]["power_on"]
        w.net_ap(SSID, up=False)
    mark = wait_link(net, "cellular", mark)
    with net.world() as w:
        st = w.net()
        assert st["route"] == "cellular" and st["modem"]["counters"]["power_on"] == power_ons, st["modem"]
        w.net_ap(SSID, up=True)
    wait_console(net, "modem standby, driver unloaded", wait_link(net, "wifi", mark))
    with HubConsole(net.port, soft_reset=False) as con:
        s = con.call("service", "link_json")
        loaded = con.exec("import sys\nprint([m for m in ('hemhub.link.modem', 'hemhub.codec.at') if m in sys.modules])")
    assert s["link"] == "wifi" and s["failovers"] == 2 and s["cellular"] == "standby", s
    assert s["modem"] == "standby" and loaded.strip() == "[]", (s, loaded)


def test_unhealthy_wifi_fails_over(net, echo_server):
    # WiFi stays associated but carries nothing (cut upstream): the probe finds out.
    mark = wait_link(net, "wifi", configure(net, link={**LINK, "probe": f"127.0.0.1:{echo_server}",
                                                       "probe_ms": 200}))
    with net.world() as w:
        w.net_link("wifi", cut=True)
    end = wait_link(net, "cellular", mark)
    line = net.console_log()[mark:end + 80].decode().splitlines()
    assert any("wifi -> none" in x for x in line), line  # found out, then failed over
    with net.world() as w:
        assert w.net()["links"]["wifi"]["refused"] >= 2  # the probes that failed


@pytest.mark.parametrize("setting,state", [
    ({"sim": "absent"}, "no_sim"),
    ({"sim": "pin"}, "pin_required"),
    ({"reg": "denied"}, "denied"),
    ({"fault": "no_carrier"}, "no_carrier"),
])
def test_modem_fault_then_recovery(net, setting, state):
    with net.world() as w:
        w.net_modem(**setting)
    mark = configure(net, wifi=False)
    mark = wait_console(net, f"hemhub link: cellular {state}\r\n", mark)
    with net.world() as w:
        assert w.net()["route"] is None
        w.net_modem(sim="ready", reg="registered", fault="none")
    wait_link(net, "cellular", mark)  # the next try, after its backoff, gets through


def test_pin_from_config_unlocks_the_sim(net):
    with net.world() as w:
        w.net_modem(sim="pin", pin="2468")
    wait_link(net, "cellular", configure(net, wifi=False, sim_pin="2468"))


def test_a_rejected_pin_is_never_offered_again_though_the_driver_is_reloaded(net):
    # Between tries the modem driver is unloaded (its heap goes to sensing); the
    # fact that the SIM rejected the PIN must outlive it: three wrong PINs lock
    # the SIM until a technician enters its PUK.
    with net.world() as w:
        w.net_modem(sim="pin", pin="2468")
    wait_console(net, "hemhub link: modem pin_wrong, driver unloaded", configure(net, wifi=False, sim_pin="1111"))
    deadline = time.monotonic() + 20
    while True:  # three more tries, each with a freshly loaded driver that asks the SIM
        with net.world() as w:
            m = w.net()["modem"]
        if m["counters"]["sim_queries"] >= 4:
            break
        assert time.monotonic() < deadline, m
        time.sleep(0.1)
    assert m["pin_tries"] == 2 and m["sim"] == "pin", m  # one wrong PIN only: the SIM is not locked


def test_hung_modem_recovers_by_power_cycle(net):
    mark = wait_link(net, "cellular", configure(net, wifi=False))
    with net.world() as w:
        before = w.net()["modem"]["counters"]["power_off"]
        w.net_modem(fault="dead", drop_carrier=True)  # the call drops and the module hangs
    mark = wait_link(net, "none", mark)
    wait_link(net, "cellular", mark)
    with net.world() as w:
        m = w.net()["modem"]
    assert m["counters"]["power_off"] > before and m["fault"] is None and m["online"]
    s = link_state(net)
    assert s["link"] == "cellular" and s["modem"] == "data"
    assert s["quality"] == {"csq": 20, "rssi_dbm": -73}  # 27.007 8.5: -113 + 2 * 20


def test_wifi_check(net):
    with HubConsole(net.port) as con:
        good = con.call("service", "wifi_check_json", SSID, PSK, 3000)
        wrong = con.call("service", "wifi_check_json", SSID, "not the key", 3000)
        missing = con.call("service", "wifi_check_json", "neighbour", PSK, 3000)
    assert good["ok"] is True and good["rssi"] == -52 and "error" not in good
    assert wrong == {"ok": False, "ssid": SSID, "rssi": -52, "error": "wrong password"}
    assert missing == {"ok": False, "ssid": "neighbour", "error": "network not found"}
    assert PSK not in repr(good)


class _Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            try:
                d = self.request.recv(4096)
            except OSError:
                return
            if not d:
                return
            self.request.sendall(d)


@pytest.fixture
def echo_server():
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def test_tcp_goes_through_the_active_link_and_breaks_when_cut(net, echo_server):
    wait_link(net, "wifi", configure(net, apn=False))
    with net.world() as w:
        w.net_link("wifi", latency_ms=30)
        before = w.net()["links"]["wifi"]
    with HubConsole(net.port, soft_reset=False) as con:  # interrupt the app; WiFi stays up
        out = con.exec(
            "import socket, time\n"
            f"s = socket.socket(); s.connect(socket.getaddrinfo('localhost', {echo_server})[0][-1])\n"
            "t = time.ticks_ms(); s.send(b'ping'); print(s.recv(16), time.ticks_diff(time.ticks_ms(), t))\n")
        reply, ms = out.split()
        assert reply == "b'ping'" and int(ms) >= 60  # 30 ms each way through the WiFi proxy
        with net.world() as w:
            after = w.net()["links"]["wifi"]
            assert after["connections"] == before["connections"] + 1 and after["open"] == 1
            assert after["bytes_up"] - before["bytes_up"] == 4
            w.net_link("wifi", cut=True)
        out = con.exec(
            "try:\n s.send(b'x'); print('got', s.recv(16))\n"
            "except OSError as e:\n print('error', e.args[0])\n")
        assert out.split()[0] in ("error", "got") and "x" not in out, out  # reset (or EOF): nothing echoed
        out = con.exec(
            f"s = socket.socket(); s.connect(socket.getaddrinfo('localhost', {echo_server})[0][-1])\n"
            "try:\n s.send(b'again'); print('got', s.recv(16))\n"
            "except OSError as e:\n print('error', e.args[0])\n")
        assert "again" not in out, out
    with net.world() as w:
        assert w.net()["links"]["wifi"]["refused"] >= 1
