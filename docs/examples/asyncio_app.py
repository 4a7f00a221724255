# main.py of a device that runs its own task beside keypin's (docs/asyncio.md): keypin's
# tasks keep the pinned MQTT connection, publish status, check in over pinned HTTPS, take
# commands and signed pin updates; this file adds a sensor task that publishes over the same
# pinned MQTT connection. Copy it to the board as main.py (config.json as for keypin.app).
import asyncio

from keypin import aio_app


def read_sensor(n):
    # stand-in for a real sensor (machine.ADC, a DS18B20 ...)
    return 20.0 + (n % 10) / 10


async def sensor(app, every):
    n = 0
    while True:
        n += 1
        try:
            # -> <topic_prefix>/<device_id>/temperature, pinned, waits for the connection
            await app.publish("temperature", str(read_sensor(n)))
        except OSError as e:  # no connection right now: keypin reconnects, we try again later
            print("sensor: not published:", e)
        await asyncio.sleep(every)


async def main():
    app = aio_app.start("config.json")  # keypin's tasks are running from here on
    if app is None:  # no usable config.json or pin store: keypin said why
        return
    asyncio.create_task(sensor(app, every=1))
    await app.wait()  # forever (or config "cycles" status rounds), then stops keypin's tasks


asyncio.run(main())
