import type { Projection } from "../src/store/types.ts";
import { accessGrants } from "./access_grants.ts";
import { analyticsAccess } from "./analytics_access.ts";
import { analyticsChart } from "./analytics_chart.ts";
import { analyticsDenials } from "./analytics_denials.ts";
import { analyticsEncounters } from "./analytics_encounters.ts";
import { analyticsGrants } from "./analytics_grants.ts";
import { analyticsPatients } from "./analytics_patients.ts";
import { analyticsStorage } from "./analytics_storage.ts";
import { analyticsUploads } from "./analytics_uploads.ts";
import { breakGlass } from "./break_glass.ts";
import { accessRequests } from "./access_requests.ts";
import { accessShares } from "./access_shares.ts";
import { chartEntries } from "./chart_entries.ts";
import { clinicOwners } from "./clinic_owners.ts";
import { clinicPractitioners } from "./clinic_practitioners.ts";
import { clinics } from "./clinics.ts";
import { encounters } from "./encounters.ts";
import { media } from "./media.ts";
import { notifications } from "./notifications.ts";
import { patients } from "./patients.ts";
import { patientViews } from "./patient_views.ts";
import { practitionerProfiles } from "./practitioner_profiles.ts";
import { proxies } from "./proxies.ts";
import { sessions } from "./sessions.ts";
import { streamSummary } from "./stream_summary.ts";
import { users } from "./users.ts";

/** Every read model the app maintains. */
export const projections: readonly Projection[] = [
  users,
  sessions,
  patients,
  encounters,
  chartEntries,
  media,
  clinics,
  clinicPractitioners,
  clinicOwners,
  practitionerProfiles,
  proxies,
  accessGrants,
  breakGlass,
  accessRequests,
  accessShares,
  streamSummary,
  patientViews,
  notifications,
  analyticsUploads,
  analyticsStorage,
  analyticsAccess,
  analyticsDenials,
  analyticsGrants,
  analyticsPatients,
  analyticsEncounters,
  analyticsChart,
];

/** The analysts' projections: each keeps views in schema `analytics`. */
export const analyticsProjections: readonly Projection[] = [
  analyticsUploads,
  analyticsStorage,
  analyticsAccess,
  analyticsDenials,
  analyticsGrants,
  analyticsPatients,
  analyticsEncounters,
  analyticsChart,
];
