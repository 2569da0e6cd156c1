"""mpremote's chatter is silenced per thread, so parallel console sessions (a
provisioning batch) neither swallow nor capture each other's output."""

import sys
import threading

from hubctl.transport import quiet_mpremote


def test_quiet_in_one_thread_does_not_silence_another(capsys):
    inside = threading.Event()
    done = threading.Event()

    def chatty_session():
        with quiet_mpremote():
            print("mpremote chatter")
            inside.set()
            done.wait(5)

    t = threading.Thread(target=chatty_session)
    t.start()
    assert inside.wait(5)
    print("the table the technician reads")
    done.set()
    t.join()
    print("after the session")
    out = capsys.readouterr().out
    assert "mpremote chatter" not in out
    assert "the table the technician reads" in out and "after the session" in out


def test_quiet_nests_and_restores():
    with quiet_mpremote():
        with quiet_mpremote():
            assert sys.stdout.quiet()
        assert sys.stdout.quiet()
    assert not sys.stdout.quiet()


def test_what_a_quiet_session_printed_is_kept_for_its_error():
    with quiet_mpremote() as out:
        print("b'rst:0x1 (POWERON_RESET)'")
        assert "POWERON_RESET" in out.kept()
    with quiet_mpremote() as out:  # a new session starts empty
        assert out.kept() == ""
        print("x" * 5000)
        assert len(out.kept()) == 600  # bounded


class _Port:
    """The serial side of a console that loses the first Ctrl-D (it met a hub
    still printing, not yet at its REPL) and answers the second."""

    def __init__(self, lost: int):
        self.lost = lost
        self.written: list[bytes] = []
        self.serial = self

    def write(self, b: bytes) -> None:
        self.written.append(b)

    def exit_raw_repl(self) -> None:
        self.written.append(b"\r\x02")

    def read_until(self, _n, ending: bytes, timeout: float) -> bytes:
        if self.written.count(b"\x04") <= self.lost:
            return b""
        return b"MPY: " + ending

    def close(self) -> None:
        pass


def test_closing_a_console_restarts_the_application_even_if_a_ctrl_d_is_lost():
    from hubctl.transport import HubConsole

    for lost, sent in ((0, 1), (1, 2)):
        con = HubConsole.__new__(HubConsole)
        con.transport, con.resume = _Port(lost), True
        con.close()
        assert con.transport.written.count(b"\x04") == sent
