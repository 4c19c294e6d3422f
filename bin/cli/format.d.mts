/** Types for format.mjs (plain JS so that `node bin/flowserve.mjs` runs it on Node 20). */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string;
export function formatBytes(n: number): string;
export function progressBar(label: string, done: number, total: number, width?: number): string;
export function errorMessage(status: number, bodyText: string): string;
export function modelsTable(list: readonly object[]): string;
export function instanceCounts(instances: readonly { role: string }[] | undefined): string;
export function deploymentsTable(list: readonly object[]): string;
export function requestText(r: object): string;
