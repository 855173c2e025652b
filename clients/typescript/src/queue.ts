/**
 * A push-driven async iterable: the request side of a bidirectional stream, written to as the
 * conversation goes on.
 */
export class AsyncQueue<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private waiting: ((result: IteratorResult<T>) => void) | undefined;
  private ended = false;

  /** Queues a value for the reader. Ignored once ended. */
  push(item: T): void {
    if (this.ended) return;
    const wake = this.waiting;
    if (wake) {
      this.waiting = undefined;
      wake({ value: item, done: false });
    } else {
      this.items.push(item);
    }
  }

  /** Ends the iteration once the queued values are read. */
  end(): void {
    this.ended = true;
    const wake = this.waiting;
    if (wake && this.items.length === 0) {
      this.waiting = undefined;
      wake({ value: undefined, done: true });
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: () => {
        const item = this.items.shift();
        if (item !== undefined) return Promise.resolve({ value: item, done: false });
        if (this.ended) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => {
          this.waiting = resolve;
        });
      },
      return: () => {
        this.ended = true;
        this.items.length = 0;
        return Promise.resolve({ value: undefined, done: true });
      },
      throw: (error: unknown) => {
        this.ended = true;
        this.items.length = 0;
        return Promise.reject(error);
      },
    };
  }
}
