"""trainserve's HTTP service: settings, tables, routers, schemas and the artifact store."""
