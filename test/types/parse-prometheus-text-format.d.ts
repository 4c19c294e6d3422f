/** Types for the npm package parse-prometheus-text-format (it ships none), as far as tests use it. */
declare module "parse-prometheus-text-format" {
  export interface ParsedSample {
    value?: string;
    labels?: Record<string, string>;
    /** Histograms: bucket counts by `le` (the parser drops other labels of bucket lines). */
    buckets?: Record<string, string>;
    count?: string;
    sum?: string;
  }
  export interface ParsedFamily {
    name: string;
    help: string;
    type: "COUNTER" | "GAUGE" | "HISTOGRAM" | "SUMMARY" | "UNTYPED";
    metrics: ParsedSample[];
  }
  /** @throws InvalidLineError on a line that is not in the text format. */
  export default function parsePrometheusTextFormat(text: string): ParsedFamily[];
}
