"""Where acknowledged feedback events go: the local segment log by default,
Kafka for deployments that outgrow one disk.

Every sink makes the same promise as the log: ``append`` returns only once
the records are durable, and raises when they may not be, so a caller that
acknowledges an event after ``append`` never acknowledges one it could lose.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Protocol

from slatewise.feedback.log import EventLog, LogClosedError


class Sink(Protocol):
    async def append(self, records: Sequence[bytes]) -> None:
        """Return once `records` are durable; raise if they may not be."""

    async def close(self) -> None:
        """Make everything appended durable and release the sink."""


class LogSink:
    """The default sink: an ``EventLog`` on local disk."""

    def __init__(self, log: EventLog) -> None:
        self.log = log

    async def append(self, records: Sequence[bytes]) -> None:
        await self.log.append(records)

    async def close(self) -> None:
        await self.log.close()


class KafkaProducer(Protocol):
    """What the sink uses of aiokafka's ``AIOKafkaProducer``: ``send`` queues a
    record and returns a future that the broker's acknowledgement resolves."""

    async def send(self, topic: str, value: bytes) -> Awaitable[object]: ...

    async def stop(self) -> None: ...


class KafkaSink:
    """Appends to a Kafka topic, returning only after the broker acknowledged
    every record.

    Durability is the broker's with ``acks="all"`` (every in-sync replica has
    the record) and the idempotent producer, whose retries cannot duplicate
    or reorder records within a partition. Records carry no key, so order
    holds per partition only, not across the topic.
    """

    def __init__(self, producer: KafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic
        self._closed = False

    @classmethod
    async def connect(cls, bootstrap_servers: str, topic: str) -> KafkaSink:
        """A sink with a started aiokafka producer (the optional ``aiokafka`` package)."""
        try:
            from aiokafka import AIOKafkaProducer
        except ImportError as exc:
            raise ImportError("KafkaSink needs the optional package 'aiokafka' "
                              "(pip install 'slatewise[kafka]')") from exc
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", enable_idempotence=True)
        await producer.start()
        return cls(producer, topic)

    async def append(self, records: Sequence[bytes]) -> None:
        if self._closed:
            raise LogClosedError(f"the Kafka sink for topic {self._topic!r} is closed")
        acks = [await self._producer.send(self._topic, record) for record in records]
        for outcome in await asyncio.gather(*acks, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome

    async def close(self) -> None:
        """Wait for what is in flight, then disconnect (aiokafka's ``stop``)."""
        self._closed = True
        await self._producer.stop()
