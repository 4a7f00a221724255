"""Host side (CPython): the mutations that show each test_aio check can fail.

Each row changes one check in a keypin.aio file (or main.py), runs the test that guards it and
restores the file byte for byte; every row must print "FAILED (caught)". It edits the shared
working tree for the length of one test: do not run it while someone else runs the suite.
    .venv/bin/python tests/integration/dev_aio_mutants.py [ROW ...]
"""
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
# (what, file, original text, mutated text, the test that must then fail)
MUT = [
 ("https rotation before the status check", "lib/keypin/aio_https.py",
  "        if self.status < 400:\n            self.verdict = s.confirm()", "        if True:\n            self.verdict = s.confirm()",
  "test_https_error_status_from_the_backup_server_does_not_rotate"),
 ("mqtt rotation before CONNACK rc check", "lib/keypin/aio_mqtt.py",
  "            a = await s.readexactly(4)\n", "            a = await s.readexactly(4)\n            s.confirm()\n",
  "test_mqtt_refused_login_on_the_backup_broker_does_not_rotate"),
 ("refusal not turned into PinMismatch", "lib/keypin/aio.py",
  "            except (OSError, ValueError) as e:\n                raise att.failed(e)", "            except (OSError, ValueError) as e:\n                raise e",
  "test_mitm_refused_with_zero_application_bytes"),
 ("sockets not closed on cancel", "lib/keypin/aio.py",
  "        att.release()\n        ss.close()\n        raw.close()\n        raise", "        att.release()\n        raise",
  "test_task_cancelled_mid_handshake_leaves_no_socket"),
 ("no deadline", "lib/keypin/aio.py",
  "                        None if timeout is None else int(timeout * 1000),", "                        None,",
  "test_handshake_deadline"),
 ("message size not bounded", "lib/keypin/aio_mqtt.py",
  "        if topic is None or p > self.limits.get(topic, self.max_msg):", "        if topic is None:",
  "hostile"),
 ("callback exception not caught", "lib/keypin/aio_mqtt.py",
  "        except Exception as e:  # a message the app cannot take", "        except KeyError as e:  # a message the app cannot take",
  "test_asyncio_app_keeps_running_under_hostile_retained_messages"),
 ("no reconnect", "lib/keypin/aio_mqtt.py",
  "            d = backoff(i)\n", "            break\n            d = backoff(i)\n",
  "test_broker_restart_survived"),
 ("redirect host not checked", "lib/keypin/aio_https.py",
  "            url = wire.follow(url, r.headers[\"location\"], st)", "            url = r.headers[\"location\"]",
  "test_redirect_to_an_unpinned_host_is_refused"),
 ("main.py switch missing", "main.py",
  "    if _asyncio(config_path):\n        from keypin.aio_app import run as _run\n", "",
  "test_main_runs_the_asyncio_app_when_configured"),
 ("update URL never checked", "lib/keypin/aio_app.py",
  "            u = await self.aupdate()", "            u = None",
  "test_asyncio_app_applies_a_signed_update"),
 ("status command not published", "lib/keypin/aio_app.py",
  "        asyncio.create_task(self.astatus())\n", "",
  "test_asyncio_app_answers_a_status_command"),
 ("no keepalive ping", "lib/keypin/aio_mqtt.py",
  "        pt = asyncio.create_task(self._pinger()) if self.keepalive else None",
  "        pt = None", "test_keepalive_pings_reach_the_broker"),
 ("silence not noticed", "lib/keypin/aio_mqtt.py",
  "            if time.ticks_diff(time.ticks_ms(), self._rx) > ka + ka // 2:",
  "            if False:", "test_a_silent_broker_is_left_and_reconnected"),
 ("retired key not re-checked on an open stream", "lib/keypin/aio.py",
  "        try:\n            self.ps._trusted()", "        try:\n            pass",
  "test_an_open_stream_ends_when_its_key_is_retired"),
 ("https rotation never confirmed", "lib/keypin/aio_https.py",
  "        if self.status < 400:\n            self.verdict = s.confirm()", "        if False:\n            self.verdict = s.confirm()",
  "test_https_rotation_confirmed_after_2xx"),
 ("mqtt rotation never confirmed", "lib/keypin/aio_mqtt.py",
  "            self.verdict = s.confirm()", "            self.verdict = s.verdict",
  "test_mqtt_rotation_confirmed_after_connack"),
]


def main(sel):
    for i, (what, f, a, b, test) in enumerate(MUT):
        if sel and str(i) not in sel:
            continue
        p = ROOT / f
        orig = p.read_bytes()
        s = orig.decode()
        if a not in s:
            print(f"{i} {what}: the original text is gone from {f}: update this row")
            continue
        try:
            p.write_text(s.replace(a, b, 1))
            r = subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "pytest", "-q", "-x",
                                "tests/integration/test_aio.py", "-k", test],
                               check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
        finally:
            p.write_bytes(orig)
        last = (r.stdout.strip().splitlines() or [""])[-1]
        print(f"{i} {what}: {test}: {'FAILED (caught)' if r.returncode else 'PASSED (NOT caught)'} -- {last}")


if __name__ == "__main__":
    main(sys.argv[1:])
