"""HIL smoke test: a hub boots, stock mpremote works, soft reset and power cuts
leave it bootable with /data mounted."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

from hubctl.transport import HubConsole
from vhubtest import write_config

MPREMOTE = [str(Path(sys.executable).parent / "mpremote")]


def mpremote(port: str, *args: str, timeout: float = 30) -> str:
    proc = subprocess.run(MPREMOTE + ["connect", port, *args], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"mpremote {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def status(rh) -> dict:
    """hemhub.service.status() over the console; on failure, show what the hub printed."""
    mark = rh.hub.console_log.stat().st_size
    try:
        with HubConsole(rh.port) as con:
            return con.call("service", "status_json")
    except Exception as e:
        tail = rh.hub.console_log.read_bytes()[mark:][-4000:].decode(errors="replace")
        with rh.world() as w:
            st = w.state()
        raise AssertionError(f"{e}\n--- console since the call ---\n{tail}\n--- world ---\n{st}") from e


def test_stock_mpremote_exec_ls_cp(vhub, tmp_path):
    assert mpremote(vhub.port, "exec", "print(6 * 7)").strip() == "42"
    listing = mpremote(vhub.port, "ls", ":/")
    assert "boot.py" in listing and "main.py" in listing
    src = tmp_path / "note.bin"
    payload = bytes(range(256)) * 9 + b"\r\n\n\x03\x04end"
    src.write_bytes(payload)
    mpremote(vhub.port, "cp", str(src), ":/data/note.bin")
    back = tmp_path / "back.bin"
    mpremote(vhub.port, "cp", ":/data/note.bin", str(back))
    assert back.read_bytes() == payload
    assert "note.bin" in mpremote(vhub.port, "ls", ":/data")


def settled_boot_count(w) -> int:
    """The boot count once the hub has finished (re)starting."""
    last = -1
    while True:
        st = w.wait_ready()
        if st["boot_count"] == last:
            return last
        last = st["boot_count"]
        time.sleep(0.5)


def test_soft_reset_runs_boot_then_main(vhub):
    before = status(vhub)  # ends with a soft reset back into the application
    with vhub.world() as w:
        boots = settled_boot_count(w)
    # Ctrl-D at the friendly REPL: "soft reboot", then boot.py and main.py again.
    import serial

    with serial.Serial(vhub.port, 115200, timeout=2) as s:
        s.write(b"\r\x03\x03")
        time.sleep(0.3)
        s.reset_input_buffer()
        s.write(b"\x04")
        out = s.read_until(b"soft reboot\r\n")
    assert out.endswith(b"soft reboot\r\n")
    with vhub.world() as w:
        assert settled_boot_count(w) == boots + 1
        assert w.state()["boots"][-1][1] == 5  # SOFT_RESET
    after = status(vhub)
    assert after["soft_reset"] is True
    assert after["reset_cause"] == before["reset_cause"]  # the hardware cause is kept
    assert after["serial"] == before["serial"]
    # ticks (uptime) are not reset by a soft reset, as on the ESP32
    assert after["uptime_s"] >= before["uptime_s"]


def test_machine_reset_restarts_interpreter(vhub):
    with HubConsole(vhub.port, resume=False) as con:  # itself a soft reset
        with vhub.world() as w:
            boots = w.state()["boot_count"]
        con.transport.exec_raw_no_follow("import machine\nmachine.reset()\n")
    with vhub.world() as w:
        deadline = time.monotonic() + 10
        while w.state()["boot_count"] == boots and time.monotonic() < deadline:
            time.sleep(0.05)
        st = w.wait_ready()
        assert st["boot_count"] == boots + 1
    assert st["boots"][-1][1] == 2, st["boots"]  # HARD_RESET
    time.sleep(1.0)  # let main.py record the boot before the console interrupts it
    s = status(vhub)
    assert s["reset_cause"] == "hard_reset" and s["soft_reset"] is True


def _reset_and_wait(vhub, code):
    with HubConsole(vhub.port, resume=False) as con:
        with vhub.world() as w:
            boots = w.state()["boot_count"]
        con.transport.exec_raw_no_follow(code)
    with vhub.world() as w:
        deadline = time.monotonic() + 10
        while w.state()["boot_count"] == boots and time.monotonic() < deadline:
            time.sleep(0.05)
        w.wait_ready()
    time.sleep(1.0)  # let main.py record the boot before the console interrupts it
    return status(vhub)


def test_a_planned_restart_names_its_reason_in_the_status(vhub):
    # The application restarts the hub itself when its heap cannot make a
    # connection (decision 0006); HMC operations must tell that from a crash.
    s = _reset_and_wait(vhub, "from hemhub import health\nhealth.note_restart('uplink: test')\n"
                              "import machine\nmachine.reset()\n")
    assert s["reset_cause"] == "hard_reset" and s["restart_reason"] == "uplink: test", s
    s = _reset_and_wait(vhub, "import machine\nmachine.reset()\n")  # not asked for by the application
    assert s["reset_cause"] == "hard_reset" and s["restart_reason"] is None, s


def test_power_cuts_while_writing_data(vhub, sim_only):
    # Make the application persist its health snapshot every 20 ms, so cuts land
    # in the middle of littlefs commits.
    write_config(vhub, {"health_persist_s": 0.02})
    rng = random.Random(20261123)
    with vhub.world() as w:
        w.reset()
        w.wait_ready()
        for i in range(20):
            time.sleep(rng.uniform(0.05, 0.6))
            w.power_cut(off_ms=rng.choice([0, 10, 100]))
            st = w.wait_ready(timeout=15)
            assert st["powered"] and st["running"], f"cut {i}: hub did not boot"
            if i % 5 == 4:
                s = status(vhub)  # through the console; resumes the application after
                assert s["data"] == "mounted", f"cut {i}: /data is {s['data']}"
                # power_on once the application has recorded this boot; until then
                # the cause of the hard reset that started the test
                assert s["reset_cause"] in ("power_on", "hard_reset")
        assert w.state()["power_cuts"] == 20
    # The application's own files survived every cut whole.
    with HubConsole(vhub.port) as con:
        boots = json.loads(con.exec("print(open('/data/boots.json').read())"))
        health = json.loads(con.exec("print(open('/data/health.json').read())"))
    assert boots["count"] >= 20
    assert "heap_free" in health


def test_application_heap_after_boot(vhub, sim_only):
    """The unprovisioned application fits its budget: at most a third of the
    hub's heap (the board emulation's reserve is not the firmware's;
    docs/decisions/0001-virtual-hub-heap.md, 0004 for the 64-bit scale)."""
    from hubctl.vhub.interp import BOARD_HEAP_RESERVE, FIRMWARE_HEAP, ROMFS_WINDOW

    board = BOARD_HEAP_RESERVE + ROMFS_WINDOW  # board modules and mapped ROMFS: not the firmware's

    write_config(vhub, {"health_persist_s": 0.2})
    with vhub.world() as w:
        w.reset()
        w.wait_ready()
        time.sleep(2.0)
        emulation = w.state()["emulation_heap"]
    with HubConsole(vhub.port) as con:
        snap = json.loads(con.exec("print(open('/data/health.json').read())"))
    assert emulation is not None and 0 < emulation <= BOARD_HEAP_RESERVE
    assert snap["heap_used"] + snap["heap_free"] <= FIRMWARE_HEAP + board
    assert snap["heap_free"] <= FIRMWARE_HEAP
    firmware = snap["heap_used"] - board
    assert firmware <= FIRMWARE_HEAP // 3, (snap, emulation)


# Code that keeps the board's event reader busy: four 1 ms timer IRQs (a world
# event each, which the reader allocates for) on a nearly full heap, so the
# reader runs a garbage collection every few events.
_BUSY_WITH_IRQS = """
from machine import Timer
import gc, time
ballast = []
try:
    while True:
        ballast.append(bytearray(256))
except MemoryError:
    pass
for i in range(12):
    ballast.pop()
gc.collect()
ts = [Timer(i) for i in range(4)]
for t in ts:
    t.init(period=1, callback=lambda t: None)
try:
    while True:
        time.sleep_ms(2)
finally:
    for t in ts:
        t.deinit()
    ballast = None
"""


def test_ctrl_c_interrupts_code_however_busy_the_irqs(vhub):
    """Every Ctrl-C reaches the running code and the REPL answers again. A SIGINT
    to the whole interpreter could land in the board's event reader instead,
    which then died and left the REPL silent ("No MicroPython REPL answered")."""
    with HubConsole(vhub.port) as con:
        t = con.transport
        for i in range(40):
            t.exec_raw_no_follow(_BUSY_WITH_IRQS)
            time.sleep(0.05 + (i % 5) * 0.03)
            t.serial.write(b"\x03")
            out, err = t.follow(timeout=10)
            assert b"KeyboardInterrupt" in err, f"interrupt {i}: {out!r} {err!r}"
        assert con.exec("print(6 * 7)").strip() == "42"


def test_ctrl_c_interrupts_code_that_never_waits(vhub):
    """A loop that never sleeps or polls is interrupted too, as on the chip."""
    with HubConsole(vhub.port) as con:
        t = con.transport
        t.exec_raw_no_follow("n = 0\nwhile True:\n    n += 1\n")
        time.sleep(0.2)
        t.serial.write(b"\x03")
        out, err = t.follow(timeout=10)
        assert b"KeyboardInterrupt" in err, (out, err)
        assert int(con.exec("print(n)")) > 0


def test_the_boards_network_modules_cost_the_firmware_nothing(vhub, sim_only):
    """network, socket and machine.UART are C in flash on the chip: the virtual
    hub imports them into the board's reserve, not the firmware's heap."""
    with HubConsole(vhub.port) as con:
        grew = int(con.exec("import gc\ngc.collect()\na = gc.mem_alloc()\n"
                            "import network, socket\nfrom machine import UART\n"
                            "gc.collect()\nprint(gc.mem_alloc() - a)\n"))
    assert grew < 256, f"the board's network modules took {grew} bytes of the firmware's heap"


_NAMES_ROOM = """
import gc
class O:
    pass
o = O()
gc.collect()
jumps = []
for i in range(1100):
    a = gc.mem_alloc()
    getattr(o, "fw_name_%d" % i, None)
    d = gc.mem_alloc() - a
    if d > 4096:
        jumps.append((i, d))
print(jumps)
"""


def test_chip_qstr_pools_leave_the_firmware_room_for_its_names(tmp_path, bundle, monkeypatch, sim_only):
    """HEMHUB_QSTR_POOLS=chip (decision 0005): the board makes the 1,280-entry
    qstr pool at start-up, so a thousand new names of the firmware's own never
    need a pool (one block of ~14 KiB) later; by default the board's own ~400
    names leave the firmware at the edge of that pool."""
    from hubctl.vhub import interp, supervisor
    from vhubtest import run_hub

    def new_pools(hub_dir) -> list:
        with run_hub(hub_dir, bundle) as rh:
            with HubConsole(rh.port, resume=False) as con:
                return json.loads(con.exec(_NAMES_ROOM).replace("(", "[").replace(")", "]"))

    assert new_pools(tmp_path / "default") != []  # the default meets a pool within 1,100 names
    reserve = interp.BOARD_HEAP_RESERVE + interp.QSTR_POOLS_RESERVE
    monkeypatch.setenv("HEMHUB_QSTR_POOLS", "chip")
    monkeypatch.setattr(supervisor, "BOARD_HEAP_RESERVE", reserve)
    monkeypatch.setattr(supervisor, "VHUB_HEAP_SIZE",
                        f"{(interp.FIRMWARE_HEAP + reserve + interp.ROMFS_WINDOW) // 1024}K")
    assert new_pools(tmp_path / "chip") == []
