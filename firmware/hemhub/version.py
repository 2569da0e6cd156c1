# The application version; hubctl build writes it into the bundle manifest.
VERSION = "0.1.0"
