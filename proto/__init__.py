"""Message schemas, codec, envelope and topics: the contract between the services. Imports msgspec only."""
