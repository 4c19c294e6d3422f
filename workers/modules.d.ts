/** Bundled data modules (wrangler.toml [[rules]] type "Data"). */
declare module "*.gguf" {
  const bytes: ArrayBuffer;
  export default bytes;
}
