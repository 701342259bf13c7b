import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { AppEnv } from "./env.ts";
import { NotFoundError } from "../errors.ts";
import { problemResponses } from "./problem.ts";

const ASSETS: Record<string, string> = {
  "swagger-ui.css": "text/css; charset=utf-8",
  "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
};

const PAGE = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Chartlog API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/init.js"></script>
</body></html>`;

const INIT = `window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#ui" });`;

/**
 * Interactive API docs (Swagger UI) served from the npm package itself: no
 * CDN, so it works offline and under a strict same-origin CSP.
 */
export const docs = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "get",
      path: "/",
      tags: ["system"],
      summary: "Interactive API documentation",
      responses: {
        200: { description: "Swagger UI", content: { "text/html": { schema: z.string() } } },
      },
    }),
    (c) => c.html(PAGE),
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/assets/{name}",
      tags: ["system"],
      summary: "Static assets of the documentation page",
      request: { params: z.object({ name: z.string().max(64) }) },
      responses: {
        200: { description: "asset", content: { "text/javascript": { schema: z.string() } } },
        ...problemResponses("not-found"),
      },
    }),
    async (c) => {
      const { name } = c.req.valid("param");
      if (name === "init.js") {
        return c.body(INIT, 200, { "content-type": "text/javascript; charset=utf-8" });
      }
      const type = Object.hasOwn(ASSETS, name) ? ASSETS[name] : undefined;
      if (!type) throw new NotFoundError("no such asset");
      // imported on first use: the package's entry point loads the whole bundle (about 35 MB
      // resident, measured) only to tell where its files are
      const { default: swaggerUiDist } = await import("swagger-ui-dist");
      const bytes = await Deno.readFile(`${swaggerUiDist.getAbsoluteFSPath()}/${name}`);
      return c.body(bytes, 200, { "content-type": type, "cache-control": "public, max-age=3600" });
    },
  );
