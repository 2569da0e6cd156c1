# Stage 2: start the application from the slot boot.py chose.
# First a hole for the application's long-lived buffers: importing the modules
# fragments the heap (MicroPython never compacts it), so the hole is made before
# them and handed over once they are in (docs/decisions/0004-heap-on-a-64-bit-
# interpreter.md).
arena = [bytearray(20 * 1024)]
import hemhub.app  # noqa: E402

hemhub.app.main(arena)
