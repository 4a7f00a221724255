# keypin.app's rarely used half, imported on first use: MQTT commands and fleet pin updates,
# publishing the failure reports, the watchdog. It imports nothing from keypin.app (no circle):
# the app's log functions come with the App object `a`.


def publish_reports(a, r, mq):
    # the failure reports, after a pinned connection; cleared once the broker has them (QoS 1)
    n = len(r.items)
    try:
        mq.publish(a.report_topic, r.payload(a.dev), retain=True, qos=1)
        r.clear()
    except Exception as e:  # one log line, the device keeps running
        a._fail("mqtt report publish", e)
        mq.close()
        return
    a.log(f"mqtt: {n} pin-failure report(s) published to {a.report_topic} and cleared")


def on_cmd(a, topic, msg):
    # App.on_cmd: a fleet pin update, or a command (raises for an unknown or non-UTF-8 one)
    if a.pins_topic and topic == a.pins_topic.encode():
        if a.updater:
            try:
                a.updater.offer(msg, "mqtt")
            except Exception as e:  # a refused or broken update is the updater's to report
                a.log("update via mqtt failed:", a.one_line(e))
        return
    cmd = msg.decode().strip()
    if not cmd:  # an empty retained message clears the topic
        return
    a.log("command:", cmd)
    if cmd == "status":
        a.publish_status()
    elif cmd == "checkin":
        a.next_checkin = 0
    else:
        raise ValueError("unknown command %r" % cmd[:40])


def wdt(ms, log):
    try:
        from machine import WDT
        return WDT(timeout=ms)
    except Exception as e:
        log("watchdog not started: %s: %s" % (type(e).__name__, e))
        return None
