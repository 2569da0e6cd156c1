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
