"""Network links: WiFi station and 4G modem (AT + PPP), and the manager that
keeps one of them up (hemhub.link.manager). docs/link.md describes them."""


class ModemError(Exception):
    """The modem stopped bring-up in `state` (hemhub.link.modem's docstring lists
    them). Here, not in modem.py, so the manager can catch it without loading the
    modem driver and the AT codec before 4G is actually needed."""

    def __init__(self, state, detail=""):
        super().__init__(state, detail)
        self.state = state
