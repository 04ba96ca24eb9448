"""Running the inspector as a system service: the sd_notify protocol and watchdog (:mod:`.notify`), the one-line
status (:mod:`.status`), the SIGHUP reload (:mod:`.reload`), the systemd unit (:mod:`.unit`) and the
installer's checks (:mod:`.doctor`)."""
