"""asyncio transports feeding the protocol cores."""
