"""Network links: WiFi station and 4G modem (AT + PPP), and the manager that
keeps one of them up (hemhub.link.manager). docs/link.md describes them."""
