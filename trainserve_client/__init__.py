"""trainserve's Python client, and the terminal commands built on it: HTTP only, nothing from the service.

    from trainserve_client import Client

    with Client("http://127.0.0.1:8000") as api:
        job = api.submit_job({"dataset": "digits", "architecture": {"type": "logistic_regression"}})
        final = api.wait_for_job(job["id"])
        print(api.predict(instances=[[0.0] * 64], model=final["model"]["id"]))

docs/python-client.md lists every method.
"""

from trainserve_client.client import DEFAULT_URL, EXIT, ApiError, Client

__all__ = ["DEFAULT_URL", "EXIT", "ApiError", "Client"]
