/* mp_watch.h - a watchdog thread: armed around every blocking collective of
 * a rank, it calls on_fire (abort the communicator) once the deadline
 * passes, so that a rank whose peer died or never came gets an error
 * instead of hanging inside NCCL; and, should the call still not return
 * grace_s later, on_stuck once (the last resort: see mp_comm.h). */
#ifndef JAXMG_MP_WATCH_H
#define JAXMG_MP_WATCH_H

#include <pthread.h>

typedef struct jmg_mp_watch {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  pthread_t thread;
  int running, stop;
  int armed, fired, firing, stuck;
  double deadline; /* jmg_clock_now() seconds */
  double grace_s;  /* after a fire, how long before on_stuck */
  void (*on_fire)(void* arg);
  void (*on_stuck)(void* arg);
  void* arg;
} jmg_mp_watch;

/* 0 on success. */
int jmg_mp_watch_start(jmg_mp_watch* w);
void jmg_mp_watch_stop(jmg_mp_watch* w);
/* Arms for timeout_s seconds; disarm returns 1 if the watchdog fired. */
void jmg_mp_watch_arm(jmg_mp_watch* w, double timeout_s, void (*on_fire)(void*),
                      void (*on_stuck)(void*), double grace_s, void* arg);
int jmg_mp_watch_disarm(jmg_mp_watch* w);

#endif
