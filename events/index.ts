import { Catalog } from "../src/store/catalog.ts";
import { authEvents } from "./auth.ts";
import { accessEvents } from "./access.ts";
import { auditEvents } from "./audit.ts";
import { chartEvents } from "./chart.ts";
import { clinicEvents, clinicMembershipEvents, clinicOwnerEvents } from "./clinic.ts";
import { encounterEvents } from "./encounter.ts";
import { mediaEvents } from "./media.ts";
import { notificationEvents } from "./notification.ts";
import { patientEvents } from "./patient.ts";
import { practitionerEvents } from "./practitioner.ts";
import { proxyEvents } from "./proxy.ts";
import { subjectEvents } from "./subject.ts";
import { userEvents } from "./user.ts";

/** Every event type Chartlog writes. One file per stream category. */
export const catalog = new Catalog([
  ...subjectEvents,
  ...userEvents,
  ...authEvents,
  ...patientEvents,
  ...encounterEvents,
  ...chartEvents,
  ...mediaEvents,
  ...clinicEvents,
  ...clinicMembershipEvents,
  ...clinicOwnerEvents,
  ...practitionerEvents,
  ...proxyEvents,
  ...accessEvents,
  ...notificationEvents,
  ...auditEvents,
]);
