"""What every part of the service stands on: settings, the database (engine, tables, migrations), the
artifact store, the broker and the queue, and the runtime that holds them for one process."""
