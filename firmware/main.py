# Stage 2: start the application from the slot boot.py chose.
import hemhub.app

hemhub.app.main()
