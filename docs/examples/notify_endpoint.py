"""An application's endpoint for jobhooks' notifications, complete, in Flask.

    pip install flask standardwebhooks
    JOBHOOKS_SECRET=whsec_… flask --app docs/examples/notify_endpoint.py run --port 5000

tests/tooling/test_examples.py runs it against notifications signed as jobhooks signs them.
"""

import os

from flask import Flask, request
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

app = Flask(__name__)
webhook = Webhook(os.environ["JOBHOOKS_SECRET"])  # the endpoint's whsec_… secret
applied = set()  # in your application: a table with a unique key on the webhook-id


@app.post("/jobhooks")
def jobhooks_notification():
    try:
        event = webhook.verify(request.get_data(), dict(request.headers))
    except WebhookVerificationError:
        return "", 401
    webhook_id = request.headers["webhook-id"]  # the same on every retry of one notification
    if webhook_id in applied:
        return "", 204  # a retry of one already applied: answer 2xx, do nothing
    applied.add(webhook_id)
    if event["type"].startswith("submission."):
        submission = event["data"]  # the object `jobhooks submissions show` prints
        result = submission["output_url"] or submission["error"]
        print(event["type"], submission["submission_id"], result)
    return "", 204  # within 15 s; anything slow belongs in your own queue
