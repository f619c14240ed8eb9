"""The app\x27s pages: Models, Forget (wizard), Jobs, Chat, Settings."""
