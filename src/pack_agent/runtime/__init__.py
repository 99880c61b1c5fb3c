"""The runtime: wiring the stages and owning the process's life.

``agent`` wires source, decoder, tracker, policy, store and delivery together
and runs the main loop; the timers it delegates to are ``notice_dispatch``,
``health_sampler``, ``save_schedule`` and ``clock_rebase``; ``daemon`` starts
and stops it (signals, SIGHUP reload, watchdog via ``sdnotify``); ``logsetup``
and ``status`` are its logs and status file; ``replay`` runs the same pipeline
over a recorded log. The only package allowed to import every stage; nothing
imports it but ``cli`` and ``dev``.
"""
