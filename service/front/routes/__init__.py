"""The routes: thin FastAPI routers, one module per family of routes, each parsing its schema
and handing the work to service/front/serving."""
