"""A build as a task: the service that accepts and runs it, the pipeline of its steps, the queue,
the task store, the bus that carries its log to watchers, sources and housekeeping."""
