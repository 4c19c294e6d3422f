/** CSS files imported as text (esbuild's text loader in scripts/build-dashboard.ts). */
declare module "*.css" {
  const text: string;
  export default text;
}
