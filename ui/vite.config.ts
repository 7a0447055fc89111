import { defineConfig } from "vite";

// The API crate embeds dist/ with include_bytes!, so the output must be a
// fixed, small set of files with stable names: index.html, assets/app.js,
// assets/app.css. No hashes, no extra chunks, no preload polyfill.
export default defineConfig({
  base: "/",
  server: {
    // `npm run dev` forwards API calls to a locally running `sluice run`.
    proxy: { "/api": "http://127.0.0.1:8080" },
  },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    cssCodeSplit: false,
    modulePreload: false,
    assetsInlineLimit: 0,
    rolldownOptions: {
      output: {
        entryFileNames: "assets/app.js",
        chunkFileNames: "assets/[name].js",
        assetFileNames: (info) =>
          info.names.some((n) => n.endsWith(".css")) ? "assets/app.css" : "assets/[name][extname]",
      },
    },
  },
});
