from client import Tracker  # the server: PROGRESSD_URL (default http://127.0.0.1:8000), PROGRESSD_TOKEN

ui = {"name": "Generate application UI", "substeps": ["Customers", "Sales"]}
tracker = Tracker.create("Cellphone Store CRM", steps=["Create database tables", ui])
with tracker.step(1) as step:  # starts the step; completes it on exit, fails it on an exception
    for i, table in enumerate(["customers", "products", "sales"], start=1):
        step.log(f"created table {table}")
        step.progress(100 * i / 3)  # rate-limited client-side: a hot loop cannot flood the server
with tracker.step(2) as step:
    for n in (1, 2):
        tracker.check()  # waits while the task is paused; raises Cancelled once it is cancelled
        step.substep_done(n)
print(f"{tracker.task_id}: {tracker.status}")
