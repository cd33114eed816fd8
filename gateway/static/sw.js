// progressd's service worker: shows the Web Push notifications the server sends (step complete, approval
// needed, task complete or failed…) when no progressd page is open, and opens the task when one is clicked.
// The push body is the JSON of the push channel: {title, body, kind, task_id, url, dedupe_key, …}.

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

function taskUrl(data) {
  // Only this server's own pages: a notification never opens another site.
  try {
    const url = new URL(data.url, self.location.origin);
    if (url.origin === self.location.origin) return url.href;
  } catch {
    // not a URL: fall through
  }
  return new URL(data.task_id ? `/tasks/${encodeURIComponent(data.task_id)}` : "/", self.location.origin).href;
}

self.addEventListener("push", (event) => {
  let data;
  try {
    data = event.data ? event.data.json() : {};
  } catch {
    data = { body: event.data ? event.data.text() : "" };
  }
  if (typeof data !== "object" || data === null) data = { body: String(data) };
  const title = typeof data.title === "string" && data.title ? data.title : "progressd";
  const options = {
    body: typeof data.body === "string" ? data.body : "",
    icon: "/static/favicon.svg",
    data: { url: taskUrl(data) },
  };
  // One notification per task and kind, as on the page: a newer one replaces an older one.
  if (data.task_id && data.kind) options.tag = `${data.task_id}:${data.kind}`;
  event.waitUntil(self.registration.showNotification(title, options));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = event.notification.data?.url ?? new URL("/", self.location.origin).href;
  event.waitUntil(
    self.clients.matchAll({ type: "window", includeUncontrolled: true }).then((windows) => {
      const open = windows.find((w) => w.url === url);
      return open ? open.focus() : self.clients.openWindow(url);
    }),
  );
});
