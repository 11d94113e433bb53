"""Reusable pieces for end-to-end tests (import them; they are plain helpers, not fixtures).

- ``waiting``: ``wait_until(predicate, timeout, what)`` and ``free_port()``.
- ``mosquitto``: ``Mosquitto(tmp_dir)`` a real broker on a free port with ``start()``,
  ``stop()``, ``restart()``; persistence on, optional password file and ACL.
- ``postgres``: ``PgDatabases`` makes fresh PostgreSQL databases (127.0.0.1:5432, user
  postgres, trust) from a migrated template and drops them all in ``close()``;
  ``migrated_sqlite(path)`` for SQLite.
- ``cabinet``: a simulated cabinet (``simulator.Simulator`` over a pty) and the edge
  controller as a child process (``ControllerProcess``), with a TOML writer whose locker key
  is derived from the cloud's master secret.
- ``mqtt_clients``: ``FakeLocker``, a paho client playing one locker (events, presence,
  telemetry, replies; records the commands it receives).
- ``proxy``: ``CuttableLink``, a TCP proxy for one network path (a locker's uplink to the
  broker) with ``cut()`` and ``restore()``; the broker and its other clients carry on.
- ``child_process``: ``stop_child`` (SIGTERM, then SIGKILL), ``kill_child`` and
  ``ServiceProcess``, the start/ready/stop/kill of a service child whose output goes to a log.
- ``api_process``: ``ApiProcess``, ``xinbao api`` as a real child that a test can SIGKILL
  and start again with the same MQTT client id.
- ``journey``: ``Journey``, one applicant's whole journey step by step through the real
  interfaces (APIs, SMS inbox, kiosk, simulator), counting the door openings it authorised;
  ``assert_matches_ground_truth`` checks the cloud against the simulator's ground truth.
- ``cli``: ``xinbao(*args)``, the command as a real subprocess, and ``one_line_error``.
- ``demo_run``: ``DemoRun``, ``xinbao demo`` as a child process, its output line by line.
- ``compose``: docker-compose.yml without Docker: compose's variable substitution, the
  services' own commands as plain processes (``Stack``), ``MqttProbe`` for the broker's ACL.
- ``browser``: Debian's chromium through Playwright, an app served by uvicorn in a thread,
  screenshots kept in test-artifacts/.

Each helper stops what it starts; wrap them in fixtures with teardown (the suite's health
check fails a test that leaves threads or child processes behind). ``tests/e2e/conftest.py``
shows the fixtures built on them.
"""
