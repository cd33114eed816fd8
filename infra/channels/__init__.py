"""Notification channels: email (SMTP), chat webhooks, Web Push and ntfy; the browser feed sends nothing."""
