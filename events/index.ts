import { Catalog } from "../src/store/catalog.ts";
import { subjectEvents } from "./subject.ts";

/** Every event type Chartlog writes. One file per stream category. */
export const catalog = new Catalog([...subjectEvents]);
