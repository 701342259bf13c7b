/**
 * The one form a timestamp takes in API responses: ISO 8601 in UTC with
 * milliseconds, `2026-11-30T16:10:00.123Z` (`Date#toISOString`). Lists and
 * items use it alike, whether the time comes from an event or a table row,
 * so a client can compare what a list and an item say.
 *
 * @example
 * timestamp(event.recordedAt); // "2026-11-30T16:10:00.123Z"
 */
export const timestamp = (t: Date | string | number): string => {
  const d = t instanceof Date ? t : new Date(t);
  if (Number.isNaN(d.getTime())) throw new RangeError("not a timestamp");
  return d.toISOString();
};
