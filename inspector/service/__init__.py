"""Running the inspector as a system service: the sd_notify protocol and watchdog (:mod:`.notify`), the
systemd unit (:mod:`.unit`) and the installer's checks (:mod:`.doctor`)."""
