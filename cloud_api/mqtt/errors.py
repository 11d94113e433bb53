"""Errors of the cloud's MQTT side, drawn once.

    MqttError
    ├── MessageDropped          a message we cannot or must not act on (logged, acknowledged)
    │   ├── (ContractError)     bad topic, not JSON, not the contract: xinbao.contract raises it
    │   └── UnknownLocker       a topic naming a locker that is not registered
    └── LinkDown                no broker connection to send a command on

A failing database is not here: the bridge retries those (sqlalchemy.exc.OperationalError)
without acknowledging the message, so a crash or an outage only ever causes a redelivery.
"""


class MqttError(Exception):
    pass


class MessageDropped(MqttError):
    pass


class UnknownLocker(MessageDropped):
    pass


class LinkDown(MqttError):
    pass
