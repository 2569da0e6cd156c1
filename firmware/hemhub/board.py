# Pin map of the reference hub; mirrors hardware/esp32-hemhub-r1.json (a host
# test checks that the two agree).
from micropython import const

STATUS_LED = const(2)
SERVICE_BUTTON = const(0)
DOOR_REED = const(25)
MODEM_POWER = const(27)
MODEM_TX = const(17)
MODEM_RX = const(16)
