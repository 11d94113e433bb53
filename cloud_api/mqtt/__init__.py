"""The cloud's MQTT side: ingest what lockers publish, send them signed commands.

``CloudBridge(settings, engine)`` is started and stopped by the app lifespan when
``XINBAO_MQTT_URL`` is set; routes reach it as ``app.state.bridge`` (None without MQTT).
"""

from cloud_api.mqtt.bridge import CloudBridge

__all__ = ["CloudBridge"]
