# What boot.py found, for the application and the service API.
data = "unknown"  # mounted | formatted | damaged
slot = "?"
frozen = False  # True: the application runs from the runtime's frozen copy
