import assert from "node:assert/strict";
import { hasMarkupStructure, isPolyglot } from "../src/media/sniff.ts";

const enc = new TextEncoder();

/** What a browser or an XML reader would parse as elements, declarations or instructions. */
const MARKUP = [
  '<img src=x onerror="alert(1)">',
  "<body onload=alert(1)>",
  "<object data=x.swf></object>",
  "<embed src=x>",
  "<svg xmlns='http://www.w3.org/2000/svg'>",
  "<SVG onload=x>",
  "<script>alert(1)</script>",
  "done.</p>",
  '<?xml version="1.0"?>',
  "<!DOCTYPE html>",
  "<!-- hidden -->",
  "<![CDATA[x]]>",
  "<details open ontoggle=x>",
  "<x",
  "see <_private>",
  "<é>",
  "plain\n".repeat(2000) + "<math>",
];

/** Clinical text with `<` and `>` that opens nothing. */
const CLINICAL = [
  "K+ <5 mmol/L",
  "a < b > c",
  "x < y and y > z",
  "CRP <0.5 mg/dL, HbA1c < 6.5%",
  "eGFR <60; BP <140/90",
  "dose <= 3 mg, pain score >= 7",
  "T <-> T",
  "<< see previous note >>",
  "wound < 3 cm > last week",
  "5<6 and 7>2",
  "arrow <- here",
  "",
];

Deno.test("text sniffing: anything that parses as markup is refused, whatever its tag", () => {
  for (const s of MARKUP) {
    assert.equal(hasMarkupStructure(s), true, s);
    assert.equal(isPolyglot(enc.encode(`Progress note\n${s}\n`), "text/plain"), true, s);
  }
});

Deno.test("text sniffing: clinical comparisons with < and > are text", () => {
  for (const s of CLINICAL) {
    assert.equal(hasMarkupStructure(s), false, s);
    if (s) assert.equal(isPolyglot(enc.encode(`Lab summary\n${s}\n`), "text/plain"), false, s);
  }
});
