"""The desktop app: tray icon, windows and notifications (the only package importing Tk, customtkinter, pystray)."""
