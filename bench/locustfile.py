"""The load of `bash bench/run.sh load`: API clients as scripts and dashboards use it, each waiting 2 to 4 s between
requests (a client polling progress every few seconds): a run's progress most often, the lists of runs and models,
a model card. Behind a TLS proxy, as production is (``X-Forwarded-Proto: https``). Run by locust, headless."""

import os

from locust import HttpUser, between, task

RUN, MODEL, TOKEN = os.environ["LOAD_RUN"], os.environ["LOAD_MODEL"], os.environ["LOAD_TOKEN"]


class ApiClient(HttpUser):
    wait_time = between(2, 4)

    def on_start(self):
        self.client.headers.update({"Authorization": f"Token {TOKEN}", "X-Forwarded-Proto": "https"})

    @task(5)
    def progress(self):
        self.client.get(f"/api/training-runs/{RUN}/progress/", name="run progress")

    @task(2)
    def runs(self):
        self.client.get("/api/training-runs/?page_size=20", name="runs list")

    @task(2)
    def models(self):
        self.client.get("/api/trained-models/?page_size=20", name="models list")

    @task(1)
    def card(self):
        self.client.get(f"/api/trained-models/{MODEL}/download/?artifact=card", name="model card")
