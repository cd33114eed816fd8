// progressd pages: `/` lists your tasks (list.js), `/tasks/<id>` is one task's progress box (task.js).
// Both follow a WebSocket that resumes from its cursor (live.js) and keep the server's progress JSON up to
// date with its messages (model.js). No build step, no dependencies.

import { listPage } from "./list.js";
import { taskPage } from "./task.js";
import { setupNotifications, setupSignIn } from "./ui.js";

setupNotifications();
setupSignIn();
if (document.body.dataset.page === "task") taskPage();
else listPage();
